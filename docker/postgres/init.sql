-- Run once by the postgres image, on an empty data volume, as POSTGRES_USER (who owns all three).
-- POSTGRES_DB (optuna) already exists: the Optuna studies. MLflow makes its own tables at start.
CREATE DATABASE mlflow;       -- MLflow runs, metrics, params, Model Registry
CREATE DATABASE mlflow_auth;  -- MLflow basic-auth users and permissions
