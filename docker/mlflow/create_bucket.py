"""Create the artifact bucket if it is missing; exit 0 when it exists (run once per `up`).

Goes through the S3 API with MLflow's own keys, so a wrong key or endpoint fails here, before
MLflow starts, rather than at a trial's first artifact."""

from __future__ import annotations

import os
import sys
import time

import boto3
from botocore.exceptions import ClientError, EndpointConnectionError

bucket = os.environ["ARTIFACTS_BUCKET"]
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
for attempt in range(30):  # the S3 gateway may answer a little after its health check
    try:
        s3.create_bucket(Bucket=bucket)
        print(f"created bucket {bucket}")
        break
    except ClientError as e:
        if e.response["Error"]["Code"] in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            print(f"bucket {bucket} exists")
            break
        if e.response["Error"]["Code"] in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
            sys.exit(f"S3 refused the keys: {e}; check S3_ACCESS_KEY / S3_SECRET_KEY in docker/.env")
        error = e
    except EndpointConnectionError as e:
        error = e
    time.sleep(2)
else:
    sys.exit(f"cannot create bucket {bucket}: {error}")
s3.head_bucket(Bucket=bucket)
