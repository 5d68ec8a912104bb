#!/bin/sh
# SeaweedFS in one process (master, volume, filer, S3 gateway on :8333). Its S3 identities come from
# a JSON file; it is written here from the environment, so the keys live only in docker/.env.
set -eu
: "${S3_ACCESS_KEY:?set S3_ACCESS_KEY in docker/.env}" "${S3_SECRET_KEY:?set S3_SECRET_KEY in docker/.env}"
umask 077
cat > /tmp/s3.json <<JSON
{"identities": [{"name": "orchestrator",
  "credentials": [{"accessKey": "${S3_ACCESS_KEY}", "secretKey": "${S3_SECRET_KEY}"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
# -ip names this node to its own parts; -ip.bind 0.0.0.0 so the health check on 127.0.0.1 and
# other containers both reach it. 1 GB volumes instead of 30 GB: a bucket starts with several.
exec weed server -dir=/data -ip=seaweedfs -ip.bind=0.0.0.0 -volume.max=0 \
  -master.volumeSizeLimitMB=1024 -s3 -s3.port=8333 -s3.config=/tmp/s3.json
