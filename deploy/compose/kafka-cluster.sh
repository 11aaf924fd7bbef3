#!/usr/bin/env bash
# One node (KRaft controller + broker) of the `cluster` profile of docker-compose.yml, in the official
# apache/kafka image: renders server.properties from the environment, formats the storage once with
# every SCRAM user of `eduhub acl plan`, then becomes the broker.
#
# Listeners: SASL_SSL (SCRAM-SHA-512 over TLS) for clients and between brokers, as User:admin; the
# controller listener is TLS with a required client certificate (SCRAM cannot authenticate there: the
# credentials live in the metadata the controllers serve), so only holders of the broker key, principal
# User:CN=eduhub-broker, reach it. The same settings as deploy/kafka/secure.properties, which the local
# secure broker proves in the tests, for three nodes.
#
# Environment (docker-compose.yml sets it):
#   KAFKA_NODE_ID, KAFKA_ADVERTISED_HOST  this node's id and the name clients reach it by (its service)
#   KAFKA_CLUSTER_ID                      the cluster's id, the same on every node (cluster.env)
#   KAFKA_QUORUM_VOTERS                   id@host:port of the three controllers
#   KAFKA_SCRAM_USERS                     "name=PASSWORD_VARIABLE ..." of the users to create at format time
#   KAFKA_CLIENT_PORT, KAFKA_CONTROLLER_PORT  optional, 9092 and 9093: other ports for nodes sharing one host
#                                         (tests/integration/test_compose_cluster.py runs three on 127.0.0.1)
#   KAFKA_LISTEN_HOST                     optional: the address to listen on (default: every interface of
#                                         the container; the test listens on 127.0.0.1 only)
#   EDUHUB_KAFKA_ADMIN_PASSWORD and every variable KAFKA_SCRAM_USERS names: the passwords
# It starts as root only to hand the TLS key (0600, written by the cluster-certs service as root) and the
# data folder to the image's unprivileged user, then runs Kafka as that user.
set -euo pipefail
umask 077  # server.properties and client.properties hold the admin password

fail() { echo "kafka-cluster.sh: $*" >&2; exit 1; }

: "${KAFKA_NODE_ID:?set KAFKA_NODE_ID}" "${KAFKA_ADVERTISED_HOST:?set KAFKA_ADVERTISED_HOST}"
: "${KAFKA_CLUSTER_ID:?set KAFKA_CLUSTER_ID (kafka-storage.sh random-uuid), the same on every node}"
: "${KAFKA_QUORUM_VOTERS:?set KAFKA_QUORUM_VOTERS, e.g. 1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093}"
: "${EDUHUB_KAFKA_ADMIN_PASSWORD:?set EDUHUB_KAFKA_ADMIN_PASSWORD, the password of User:admin}"
: "${KAFKA_SCRAM_USERS:=}"
: "${KAFKA_CLIENT_PORT:=9092}" "${KAFKA_CONTROLLER_PORT:=9093}" "${KAFKA_LISTEN_HOST:=}"

KAFKA_HOME=${KAFKA_HOME:-/opt/kafka}
KAFKA_USER=${KAFKA_USER:-appuser}
CERTS=${KAFKA_CERTS_DIR:-/certs}
DATA=${KAFKA_DATA_DIR:-/var/lib/kafka/data}
PRIVATE=${KAFKA_PRIVATE_DIR:-/var/lib/kafka/eduhub}
BROKER_PRINCIPAL=${KAFKA_BROKER_PRINCIPAL:-User:CN=eduhub-broker}
MECHANISM=SCRAM-SHA-512

# --add-scram's [name=...,password=...] and the JAAS line have no quoting: keep passwords to
# URL-safe characters (python3 -c 'import secrets; print(secrets.token_urlsafe(24))').
check_password() {
  [[ $2 =~ ^[A-Za-z0-9._~-]{16,}$ ]] || fail "the password of Kafka user $1 must be 16+ characters of A-Z a-z 0-9 . _ ~ -"
}

for file in ca.pem broker-keystore.pem; do
  [[ -r $CERTS/$file ]] || fail "$CERTS/$file is missing: the cluster-certs service writes it (eduhub deploy certs)"
done
mkdir -p "$PRIVATE" "$DATA"
cp "$CERTS/broker-keystore.pem" "$PRIVATE/broker-keystore.pem"

check_password admin "$EDUHUB_KAFKA_ADMIN_PASSWORD"
scram_args=(--add-scram "$MECHANISM=[name=admin,password=$EDUHUB_KAFKA_ADMIN_PASSWORD]")
for entry in $KAFKA_SCRAM_USERS; do
  name=${entry%%=*} variable=${entry#*=}
  [[ $name != "$entry" && -n $name && -n $variable ]] || fail "KAFKA_SCRAM_USERS: $entry is not name=PASSWORD_VARIABLE"
  password=${!variable:-}
  [[ -n $password ]] || fail "set $variable, the password of Kafka user $name"
  check_password "$name" "$password"
  scram_args+=(--add-scram "$MECHANISM=[name=$name,password=$password]")
done

cat >"$PRIVATE/server.properties" <<EOF
process.roles=broker,controller
node.id=${KAFKA_NODE_ID}
controller.quorum.voters=${KAFKA_QUORUM_VOTERS}
controller.listener.names=CONTROLLER
listeners=SASL_SSL://${KAFKA_LISTEN_HOST}:${KAFKA_CLIENT_PORT},CONTROLLER://${KAFKA_LISTEN_HOST}:${KAFKA_CONTROLLER_PORT}
advertised.listeners=SASL_SSL://${KAFKA_ADVERTISED_HOST}:${KAFKA_CLIENT_PORT}
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
sasl.enabled.mechanisms=${MECHANISM}
sasl.mechanism.inter.broker.protocol=${MECHANISM}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${EDUHUB_KAFKA_ADMIN_PASSWORD}";
listener.name.controller.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location=${PRIVATE}/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=${CERTS}/ca.pem
ssl.endpoint.identification.algorithm=https
ssl.enabled.protocols=TLSv1.3,TLSv1.2
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;${BROKER_PRINCIPAL}
log.dirs=${DATA}
num.partitions=12
auto.create.topics.enable=false
# Three replicas, two in sync for an acknowledged write: one broker may be down without loss or refusal.
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=3000
EOF

# For the container's healthcheck (kafka-broker-api-versions.sh --command-config).
cat >"$PRIVATE/client.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=${MECHANISM}
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${EDUHUB_KAFKA_ADMIN_PASSWORD}";
ssl.truststore.type=PEM
ssl.truststore.location=${CERTS}/ca.pem
EOF

# Runs "$@" as KAFKA_USER (exec: it replaces this shell). As root, with whichever tool the image has.
as_kafka() {
  if [[ $(id -u) != 0 ]]; then
    exec "$@"
  elif command -v setpriv >/dev/null; then
    exec setpriv --reuid="$KAFKA_USER" --regid="$(id -g "$KAFKA_USER")" --init-groups "$@"
  elif command -v su-exec >/dev/null; then
    exec su-exec "$KAFKA_USER" "$@"
  elif command -v su >/dev/null; then
    exec su -s /bin/bash -c "exec $(printf '%q ' "$@")" "$KAFKA_USER"
  fi
  echo "kafka-cluster.sh: no setpriv, su-exec or su in this image: Kafka runs as root" >&2
  exec "$@"
}

if [[ $(id -u) == 0 ]]; then
  chown -R "$KAFKA_USER" "$PRIVATE" "$DATA"
fi

# Only a fresh data folder is formatted: the SCRAM users exist from the first start on. A user added later
# is created with kafka-configs.sh --alter --add-config 'SCRAM-SHA-512=[password=...]' --entity-type users.
if [[ ! -f $DATA/meta.properties ]]; then
  (as_kafka "$KAFKA_HOME/bin/kafka-storage.sh" format --config "$PRIVATE/server.properties" \
     --cluster-id "$KAFKA_CLUSTER_ID" --ignore-formatted "${scram_args[@]}")
fi
as_kafka "$KAFKA_HOME/bin/kafka-server-start.sh" "$PRIVATE/server.properties"
