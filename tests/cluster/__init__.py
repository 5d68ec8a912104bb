"""The team and cluster set-up, brought up as processes on loopback: a local Ray cluster of two
nodes, PostgreSQL, an S3 endpoint (moto's server) and an MLflow server with basic auth whose
artifacts go to a bucket there. Marked `cluster`: CI runs them; `pytest -m "not cluster"` skips."""
