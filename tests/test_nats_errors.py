"""The one map of nats-py's exceptions to the bus's (``nats/errors.py``): each bus error
says what happened in the bus's words and keeps nats-py's exception as its cause."""

from __future__ import annotations

import asyncio
import ssl

import pytest

pytest.importorskip("nats")

from nats import errors as nats_errors
from nats.js import errors as js_errors

from shellbot import errors
from shellbot._settings import BusSettings
from shellbot._transports.nats import errors as mapped

SETTINGS = BusSettings(address="nats://someone:secret@127.0.0.1:4999")


def test_refused_credentials_are_final_and_keep_no_secret() -> None:
    refused = mapped.connection_refused(SETTINGS, nats_errors.AuthorizationError())
    assert isinstance(refused, errors.TransportError)
    assert "refused this program's credentials" in str(refused)
    assert "secret" not in str(refused)
    anonymous = BusSettings(address="nats://127.0.0.1:4999")
    assert "requires credentials" in str(
        mapped.connection_refused(anonymous, nats_errors.Error("nats: 'Authorization Violation'"))
    )


def test_an_untrusted_certificate_is_final_and_anything_else_is_not() -> None:
    untrusted = ssl.SSLCertVerificationError("certificate verify failed")
    untrusted.verify_message = "self-signed certificate"
    said = mapped.connection_refused(SETTINGS, untrusted)
    assert said is not None and "self-signed certificate" in str(said)
    assert mapped.connection_refused(SETTINGS, nats_errors.StaleConnectionError()) is None


@pytest.mark.parametrize(
    ("made", "kind", "cause"),
    [
        (
            lambda cause: mapped.no_jetstream(SETTINGS, cause),
            errors.TransportError,
            js_errors.ServiceUnavailableError(),
        ),
        (
            lambda cause: mapped.stream_refused("SHELLBOT", cause),
            errors.ConfigurationError,
            js_errors.APIError(code=400, description="bad max_age"),
        ),
        (
            lambda cause: mapped.durable_refused("durable group", "jobs", cause),
            errors.ConfigurationError,
            js_errors.APIError(code=400, description="filters overlap"),
        ),
        (
            lambda cause: mapped.not_made("ballots", cause),
            errors.TransportError,
            RuntimeError("unforeseen"),
        ),
        (
            lambda cause: mapped.not_forgotten("durable subscriber", "ballots", 2.0, cause),
            errors.TransportError,
            nats_errors.TimeoutError(),
        ),
        (
            lambda cause: mapped.connection_closed(SETTINGS, "maximum control line", cause),
            errors.TransportError,
            nats_errors.Error("maximum control line exceeded"),
        ),
    ],
)
def test_each_bus_error_keeps_its_cause(made, kind, cause) -> None:  # type: ignore[no-untyped-def]
    error = made(cause)
    assert type(error) is kind
    assert error.__cause__ is cause
    assert "secret" not in str(error)


def test_what_is_tried_again_and_what_is_not() -> None:
    assert mapped.refused_for_good(js_errors.APIError(code=400))
    assert not mapped.refused_for_good(js_errors.APIError(code=503))
    for again in (
        js_errors.ServiceUnavailableError(),
        nats_errors.TimeoutError(),
        asyncio.TimeoutError(),
    ):
        assert isinstance(again, mapped.NOT_NOW)
    assert isinstance(js_errors.NotFoundError(), mapped.NOT_NOW)  # caught before, where it matters
    assert not isinstance(errors.TransportError("ours"), mapped.NOT_NOW)
