"""Webhook signatures: sign, verify, tampering and replays."""

import hashlib
import hmac

from billing.signature import sign, verify_signature

SECRET = "whsec_test"
BODY = '{"webhook_type":"invoice.created","object_type":"invoice"}'
AT = 1_767_225_600  # 2026-01-01T00:00:00Z


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"whsec_test", f"{AT}.{BODY}".encode(), hashlib.sha256).hexdigest()
    assert sign(SECRET, AT, BODY) == expected
    assert sign(SECRET, AT, BODY.encode()) == expected
    assert len(expected) == 64


def test_known_vector() -> None:
    # Computed independently: printf '1.x' | openssl dgst -sha256 -hmac key
    assert sign("key", 1, "x") == (
        "fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
    )
    assert sign("key", 1, "x") != sign("key", 2, "x")


def test_verify_accepts_a_fresh_genuine_signature() -> None:
    signature = sign(SECRET, AT, BODY)
    assert verify_signature(SECRET, BODY, AT, signature, now=AT + 10) is True
    assert verify_signature(SECRET, BODY.encode(), AT, signature.upper(), now=AT) is True


def test_verify_refuses_a_tampered_body_or_wrong_secret() -> None:
    signature = sign(SECRET, AT, BODY)
    tampered = BODY.replace("created", "drafted")
    assert verify_signature(SECRET, tampered, AT, signature, now=AT) is False
    assert verify_signature("other", BODY, AT, signature, now=AT) is False
    assert verify_signature(SECRET, BODY, AT, "not-hex-é", now=AT) is False


def test_verify_refuses_a_moved_timestamp() -> None:
    signature = sign(SECRET, AT, BODY)
    assert verify_signature(SECRET, BODY, AT + 1, signature, now=AT + 1) is False


def test_verify_refuses_replays_outside_the_tolerance() -> None:
    signature = sign(SECRET, AT, BODY)
    assert verify_signature(SECRET, BODY, AT, signature, now=AT + 300) is True
    assert verify_signature(SECRET, BODY, AT, signature, now=AT + 301) is False
    assert verify_signature(SECRET, BODY, AT, signature, now=AT - 301) is False
    assert not verify_signature(SECRET, BODY, AT, signature, now=AT + 60, tolerance_seconds=30)
