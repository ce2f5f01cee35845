"""The model pipeline: train candidates, track them in MLflow, register and import the winner.

Never imported by the served code (`iris_service`): it needs MLflow, pandas and matplotlib,
which the Bento does not install.
"""
