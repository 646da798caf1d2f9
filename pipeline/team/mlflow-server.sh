#!/usr/bin/env bash
# `make mlflow-server`: a team's MLflow tracking server (docs/scale-out.md).
#   MLFLOW_BACKEND  runs and registry: sqlite:///... (default) or postgresql://USER:PW@HOST/DB
#   MLFLOW_ARTIFACTS where artifacts live; clients upload and download them through the server
#   MLFLOW_AUTH=basic MLflow's basic-auth app: logins, READ/EDIT/MANAGE per experiment and model;
#                   its users in MLFLOW_AUTH_DB (a database of its own), the first admin's
#                   password from MLFLOW_AUTH_ADMIN_PASSWORD (12+ characters).
set -euo pipefail
bin=${BIN:-.venv/bin}
home=${MLFLOW_HOME:-mlflow-server}
backend=${MLFLOW_BACKEND:-sqlite:///$home/mlflow.db}
artifacts=${MLFLOW_ARTIFACTS:-$home/artifacts}
host=${MLFLOW_HOST:-127.0.0.1}
port=${MLFLOW_PORT:-5001}
mkdir -p "$home"
# SQLAlchemy's plain postgresql:// means psycopg2; the lock file ships psycopg 3.
pg() { sed -e 's#^postgresql://#postgresql+psycopg://#' -e 's#^postgres://#postgresql+psycopg://#' <<<"$1"; }
backend=$(pg "$backend")
args=(--backend-store-uri "$backend" --artifacts-destination "$artifacts" --host "$host" --port "$port")
case "${MLFLOW_AUTH:-}" in
"") ;;
basic)
	admin_password=${MLFLOW_AUTH_ADMIN_PASSWORD:-}
	if [ "${#admin_password}" -lt 12 ]; then
		echo "mlflow-server: set MLFLOW_AUTH_ADMIN_PASSWORD (12+ characters) for the first admin" >&2
		exit 2
	fi
	auth_db=$(pg "${MLFLOW_AUTH_DB:-sqlite:///$home/auth.db}")
	cat >"$home/basic_auth.ini" <<-INI
		[mlflow]
		default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
		database_uri = $auth_db
		admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
		authorization_function = mlflow.server.auth:authenticate_request_basic_auth
		auth_cache_ttl_seconds = ${MLFLOW_AUTH_CACHE_TTL:-60}
	INI
	export MLFLOW_AUTH_CONFIG_PATH=$PWD/$home/basic_auth.ini
	# CSRF protection of the auth app needs a key that survives restarts.
	if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
		[ -s "$home/secret_key" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$home/secret_key")
		MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$home/secret_key")
		export MLFLOW_FLASK_SERVER_SECRET_KEY
	fi
	args+=(--app-name basic-auth)
	;;
*)
	echo "mlflow-server: MLFLOW_AUTH=${MLFLOW_AUTH}: use basic, or leave it empty for no logins" >&2
	exit 2
	;;
esac
echo "mlflow-server: $backend (auth: ${MLFLOW_AUTH:-none}) on http://$host:$port"
exec "$bin/mlflow" server "${args[@]}"
