#!/usr/bin/env bash
# Writes the record fixtures of the record-format tests (tests/it/formats.rs):
# Kafka Connect JSON converter output and Debezium change events, made by
# Kafka's own org.apache.kafka.connect.json.JsonConverter (connect-json and
# connect-api 4.4.0 from Maven Central) from scripts/fixtures/Fixtures.java.
#
#   scripts/fixtures.sh     # rewrites tests/fixtures/*.tsv
#
# Each line of a fixture is LABEL<TAB>KEY<TAB>VALUE, as the converter wrote
# them; an empty KEY or VALUE is null (a tombstone has an empty VALUE).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
jars=$(mktemp -d)
trap 'rm -rf "$jars"' EXIT
mvn -B -q -f "$REPO/scripts/fixtures/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$jars" -DincludeScope=runtime >&2
for format in connect_json debezium debezium_schemaless; do
    java -cp "$jars/*" "$REPO/scripts/fixtures/Fixtures.java" "$format" \
        > "$REPO/tests/fixtures/$format.tsv"
    echo "wrote tests/fixtures/$format.tsv ($(wc -l < "$REPO/tests/fixtures/$format.tsv") records)" >&2
done
