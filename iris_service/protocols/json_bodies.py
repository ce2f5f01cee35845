"""Reading a protocol's JSON body strictly, the same way for every protocol.

JSON exchanged between systems is UTF-8 (RFC 8259); a body in another encoding, nested past
the parser's recursion limit, or with NaN/Infinity (not JSON numbers) is refused with a
reason, never decoded loosely into something the logs cannot hold. Each protocol turns
`UnreadableJson` into its own error shape.
"""

from __future__ import annotations

import json
from typing import Any


class UnreadableJson(ValueError):
    """A body that is not strict UTF-8 JSON; the message completes "the body ..."."""


def _refuse_constant(name: str) -> float:
    raise UnreadableJson(f"holds {name}, which is not a JSON number")


def utf8_text(raw: bytes) -> str:
    """`raw` decoded as UTF-8; UnreadableJson("is not UTF-8 (byte n)") otherwise."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableJson(f"is not UTF-8 (byte {exc.start})") from None


def strict_json(raw: bytes) -> Any:
    """The JSON document of `raw`; UnreadableJson with the reason otherwise."""
    text = utf8_text(raw)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except UnreadableJson:
        raise
    except RecursionError:
        raise UnreadableJson("is nested too deeply") from None
    except ValueError as exc:
        raise UnreadableJson(f"is not valid JSON: {str(exc)[:120]}") from None
