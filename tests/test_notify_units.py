"""The pure parts of notifications: Retry-After, the webhook signature, preferences
(quiet hours across midnight), config validation per type."""

from __future__ import annotations

import email.utils
import hashlib
import hmac

from tocsin.notify.channels import CONFIGS, retry_after_seconds, sign, validate_config
from tocsin.notify.router import wants

NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 0 ") == 0.0
    when = email.utils.formatdate(NOW + 120, usegmt=True)
    assert retry_after_seconds(when, now=NOW) == 120.0
    assert retry_after_seconds(email.utils.formatdate(NOW - 50, usegmt=True), now=NOW) == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"event":"opened"}'
    expected = hmac.new(b"k", b"1790000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", "1790000000", body) == "sha256=" + expected
    assert sign("k", "1790000001", body) != sign("k", "1790000000", body)


def test_preferences() -> None:
    assert wants({}, "opened", "critical", NOW)
    assert not wants({}, "acknowledged", "critical", NOW)  # off unless asked for
    assert wants({"notify_on_incident_ack": True}, "acknowledged", "critical", NOW)
    assert not wants({"email_enabled": False}, "opened", "critical", NOW)
    assert not wants({"notify_on_down": False}, "opened", "critical", NOW)
    assert wants({"notify_on_down": False}, "opened", "warning", NOW)
    assert not wants({"notify_on_degraded": False}, "reminder", "warning", NOW)
    assert not wants({"notify_on_recovery": False}, "resolved", "critical", NOW)
    # 14:13 UTC is 16:13 in Warsaw (CEST).
    quiet = {"quiet_hours_start": "16:00", "quiet_hours_end": "17:00", "timezone": "Europe/Warsaw"}
    assert not wants(quiet, "opened", "critical", NOW)
    assert wants({**quiet, "timezone": "UTC"}, "opened", "critical", NOW)
    overnight = {"quiet_hours_start": "22:00", "quiet_hours_end": "15:00"}
    assert not wants(overnight, "opened", "critical", NOW)
    assert wants({**overnight, "quiet_hours_end": "14:00"}, "opened", "critical", NOW)


def test_every_type_validates_and_drops_unknown_keys() -> None:
    good = {
        "email": {"smtp_host": "mx", "from_address": "a@b", "to_addresses": ["c@d"]},
        "slack": {"webhook_url": "https://hooks.slack.com/services/T/B/x"},
        "discord": {"webhook_url": "https://discord.com/api/webhooks/1/x"},
        "teams": {"webhook_url": "https://example.webhook.office.com/x"},
        "telegram": {"bot_token": "1:x", "chat_id": 42},
        "webhook": {"url": "https://example.test/hook", "secret": "s"},
        "pagerduty": {"routing_key": "r"},
        "opsgenie": {"api_key": "k"},
    }
    assert set(good) == set(CONFIGS)
    for kind, config in good.items():
        stored, errors = validate_config(kind, {**config, "bogus": 1})
        assert errors == [] and "bogus" not in stored, kind
        assert stored["reminder_interval_s"] == 0
    stored, _ = validate_config("telegram", good["telegram"])
    assert stored["chat_id"] == "42" and stored["api_base_url"] == "https://api.telegram.org"
    _, errors = validate_config("webhook", {"url": "https://x.test", "headers": {"a b": "c"}})
    assert [e["loc"] for e in errors] == [["body", "config", "headers"]]
    _, errors = validate_config("slack", {"webhook_url": "x", "reminder_interval_s": -1})
    assert sorted(e["loc"][-1] for e in errors) == ["reminder_interval_s", "webhook_url"]


async def test_no_secret_in_what_a_send_reports() -> None:
    """A real receiver on loopback that quotes the request back (path with the bot
    token, headers) in a 500, and one that redirects forever (aiohttp's error names the
    URL with the webhook key): the answer, stored and shown, has every secret blanked."""
    from aiohttp import web

    from tocsin.api.channels import channel_json
    from tocsin.notify.channels import REDACTED, Sender

    async def echo(request: web.Request) -> web.Response:
        quoted = request.path_qs + " " + " ".join(f"{k}={v}" for k, v in request.headers.items())
        return web.Response(status=500, text=quoted)

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(request.url))

    app = web.Application()
    app.router.add_route("*", "/loop/{tail:.*}", loop)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    sender = Sender(timeout=5)
    message = {"event": "test", "summary": "s", "status": "TEST", "severity": "info"}
    message |= {"check_name": "c", "incident_id": None, "sources": {}}
    try:
        telegram = {"bot_token": "123:TOKENSECRET", "chat_id": "1", "api_base_url": base}
        out = await sender.send("telegram", telegram, message, "k")
        assert not out.ok and out.status_code == 500 and out.retry
        assert out.response and "TOKENSECRET" not in out.response and REDACTED in out.response
        hook = {"url": f"{base}/in?key=QUERYSECRET", "secret": "", "headers": {}}
        hook["headers"] = {"Authorization": "Bearer HEADERSECRET"}
        out = await sender.send("webhook", hook, message, "k")
        assert out.response and REDACTED in out.response
        assert "HEADERSECRET" not in out.response and "QUERYSECRET" not in out.response
        slack = {"webhook_url": f"{base}/loop/T0/B0/PATHSECRET"}
        out = await sender.send("slack", slack, message, "k")
        assert not out.ok and out.error and out.retry
        assert "PATHSECRET" not in out.error and REDACTED in out.error
        # Nor in what the API answers for the channel: header values masked too.
        row = {"id": 1, "organization_id": 1, "name": "n", "channel_type": "webhook"}
        row |= {"config": hook, "is_default": False, "is_active": True}
        row |= {"created_at": NOW, "updated_at": NOW}
        shown = str(channel_json(row, []))
        assert "HEADERSECRET" not in shown and "Authorization" in shown
    finally:
        await sender.close()
        await runner.cleanup()
