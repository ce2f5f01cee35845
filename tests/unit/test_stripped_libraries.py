"""How the image's stripped libraries are checked: each is loaded by what it is."""

from __future__ import annotations

from tools.stripped_libraries import SITE_PACKAGES, load_name


def test_an_extension_module_is_loaded_by_its_dotted_name() -> None:
    assert load_name(f"{SITE_PACKAGES}uvloop/loop.cpython-311-x86_64-linux-gnu.so") == "uvloop.loop"
    nested = f"{SITE_PACKAGES}sqlalchemy/engine/_result_cy.cpython-311-x86_64-linux-gnu.so"
    assert load_name(nested) == "sqlalchemy.engine._result_cy"
    assert load_name(f"{SITE_PACKAGES}_cffi_backend.cpython-311-x86_64-linux-gnu.so") == (
        "_cffi_backend"
    )
    assert load_name(f"{SITE_PACKAGES}cryptography/hazmat/bindings/_rust.abi3.so") == (
        "cryptography.hazmat.bindings._rust"
    )


def test_any_other_library_is_loaded_by_its_path() -> None:
    vendored = f"{SITE_PACKAGES}numpy.libs/libgfortran-040039e1-0352e75f.so.5.0.0"
    assert load_name(vendored) == "/" + vendored
