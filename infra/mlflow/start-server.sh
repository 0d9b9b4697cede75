#!/usr/bin/env bash
# Start the team MLflow tracking server: PostgreSQL backend store + object-store artifacts.
#
# Configuration comes from the environment only (never from files in this repository):
#   MLFLOW_BACKEND_STORE_URI      required, e.g. postgresql+psycopg2://mlflow@db.internal:5432/mlflow
#                                 Leave the password out of the URI: libpq reads PGPASSWORD.
#   PGPASSWORD                    the database password (from your secret manager / shell)
#   MLFLOW_ARTIFACTS_DESTINATION  required, e.g. s3://team-bucket/mlflow or gs://team-bucket/mlflow
#                                 The server proxies artifact uploads (--serve-artifacts), so only
#                                 the server needs bucket credentials (instance role / ADC /
#                                 AWS_* / GOOGLE_APPLICATION_CREDENTIALS in its environment).
#   MLFLOW_HOST                   bind address, default 127.0.0.1 (this machine only). On a Ray
#                                 head, set it to the head's PRIVATE IP so GPU workers inside the
#                                 cluster's security group / VPC can log; never 0.0.0.0 on a host
#                                 with a public interface.
#   MLFLOW_PORT                   default 5000
#   MLFLOW_WORKERS                server worker processes, default 4
#
# Usage:  PGPASSWORD=... MLFLOW_BACKEND_STORE_URI=... MLFLOW_ARTIFACTS_DESTINATION=... \
#           infra/mlflow/start-server.sh
# Open the UI from a laptop through SSH:  ssh -L 5000:127.0.0.1:5000 <head>  (or ray attach -p)
set -euo pipefail

missing=()
for var in MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION; do
  [[ -n "${!var:-}" ]] || missing+=("$var")
done
if (( ${#missing[@]} )); then
  echo "start-server.sh: error: set ${missing[*]} in the environment (see the header of $0)" >&2
  exit 2
fi
# A password written into the URI would end up in shell history and process listings.
if [[ "$MLFLOW_BACKEND_STORE_URI" =~ ://[^/@:]+:[^/@]+@ ]]; then
  echo "start-server.sh: error: MLFLOW_BACKEND_STORE_URI contains a password; put it in PGPASSWORD instead" >&2
  exit 2
fi

export MLFLOW_HOST="${MLFLOW_HOST:-127.0.0.1}"
export MLFLOW_PORT="${MLFLOW_PORT:-5000}"
export MLFLOW_WORKERS="${MLFLOW_WORKERS:-4}"
export MLFLOW_SERVE_ARTIFACTS=true

echo "mlflow server: backend ${MLFLOW_BACKEND_STORE_URI%%://*}://..., artifacts ${MLFLOW_ARTIFACTS_DESTINATION}, listening on ${MLFLOW_HOST}:${MLFLOW_PORT}" >&2
# mlflow reads MLFLOW_BACKEND_STORE_URI / MLFLOW_ARTIFACTS_DESTINATION / MLFLOW_HOST / ... from
# the environment itself, so nothing secret-looking appears on its command line.
exec "${MLFLOW_BIN:-mlflow}" server "$@"
