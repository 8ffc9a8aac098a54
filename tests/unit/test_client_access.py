"""How clients reach Kafka and Redis: security settings, secrets from files, refusals, no secret in a log."""
from __future__ import annotations

import pytest

from services import redis_access
from shared.config import BaseConfig, ConfigError, describe, load
from shared.kafka_clients import KafkaAccess, KafkaAccessError, access_of, security_of
from shared.redact import Redactor


def test_plaintext_by_default_and_a_bare_bootstrap_means_plaintext():
    cfg = load(BaseConfig, [], env={})
    assert KafkaAccess.of(cfg).kwargs() == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    assert access_of("h:1").kwargs()["security_protocol"] == "PLAINTEXT"


def test_sasl_ssl_reads_the_password_from_a_file_and_names_the_mechanism(tmp_path):
    pw, ca = tmp_path / "pw", tmp_path / "ca.pem"
    pw.write_text("s3cret-from-file\n")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"FACESTREAM_KAFKA_SECURITY": "sasl_ssl", "FACESTREAM_KAFKA_USER": "matcher",
           "FACESTREAM_KAFKA_PASSWORD_FILE": str(pw), "FACESTREAM_KAFKA_CA_FILE": str(ca),
           "FACESTREAM_KAFKA_BOOTSTRAP": "b1:9093,b2:9093"}
    kw = KafkaAccess.of(load(BaseConfig, [], env=env)).kwargs()
    assert kw == {"bootstrap_servers": "b1:9093,b2:9093", "security_protocol": "SASL_SSL",
                  "ssl_check_hostname": True, "ssl_cafile": str(ca), "sasl_mechanism": "SCRAM-SHA-512",
                  "sasl_plain_username": "matcher", "sasl_plain_password": "s3cret-from-file"}
    # another client to the same cluster (the membership watchdog's admin client) gets the same security
    assert security_of({**kw, "group_id": "g"}) == {k: v for k, v in kw.items() if k != "bootstrap_servers"}


@pytest.mark.parametrize("env, why", [
    ({"FACESTREAM_KAFKA_SECURITY": "sasl_ssl"}, "needs kafka_user and kafka_password"),
    ({"FACESTREAM_KAFKA_SECURITY": "sasl_ssl", "FACESTREAM_KAFKA_USER": "u"}, "needs kafka_user and kafka_password"),
    ({"FACESTREAM_KAFKA_SECURITY": "ssl", "FACESTREAM_KAFKA_CA_FILE": "/no/such/ca.pem"}, "no such file"),
])
def test_settings_that_cannot_work_are_refused_with_the_reason(env, why):
    with pytest.raises(KafkaAccessError, match=why):
        KafkaAccess.of(load(BaseConfig, [], env=env))
    assert issubclass(KafkaAccessError, ConfigError)  # the CLI prints it as one line and exits 2


def test_an_unknown_protocol_or_a_missing_password_file_is_a_configuration_error():
    with pytest.raises(ConfigError, match="kafka_security"):
        load(BaseConfig, [], env={"FACESTREAM_KAFKA_SECURITY": "tls"})
    with pytest.raises(ConfigError, match="FACESTREAM_KAFKA_PASSWORD_FILE"):
        load(BaseConfig, [], env={"FACESTREAM_KAFKA_PASSWORD_FILE": "/no/such/file"})


def test_passwords_are_masked_when_the_settings_are_logged(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("hunter2-redis")
    cfg = load(BaseConfig, [], env={"FACESTREAM_KAFKA_PASSWORD": "hunter2-kafka", "FACESTREAM_REDIS_PASSWORD_FILE": str(pw)})
    line = describe(cfg)
    assert "hunter2" not in line and "kafka_password=***" in line and "redis_password=***" in line


def test_a_password_from_a_file_is_masked_wherever_a_library_prints_it():
    redact = Redactor(["redis://127.0.0.1:6379/0"], secrets=["hunter2-kafka", ""])
    assert redact("SASL failed for user matcher with password hunter2-kafka") == \
        "SASL failed for user matcher with password ***"
    assert Redactor(secrets=["abc"])("abc") == "abc"  # too short to replace everywhere: only inside URLs


def test_redis_client_takes_tls_and_an_acl_user_from_the_settings(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    r = redis_access.client("rediss://127.0.0.1:6390/0", user="matcher", password="pw-1234", ca_file=str(ca))
    kw = r.connection_pool.connection_kwargs
    assert (kw["username"], kw["password"], kw["ssl_ca_certs"], kw["ssl_cert_reqs"]) == \
        ("matcher", "pw-1234", str(ca), "required")
    assert r.connection_pool.connection_class.__name__ == "SSLConnection"
    plain = redis_access.client("redis://127.0.0.1:6390/0").connection_pool
    assert plain.connection_class.__name__ == "Connection" and "username" not in plain.connection_kwargs
