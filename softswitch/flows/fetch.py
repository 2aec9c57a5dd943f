"""Fetching a call's instructions from its application: the request Twilio would send, signed like our
webhooks, and the answer read as TwiML or our JSON verbs.

The request is `application/x-www-form-urlencoded` with Twilio's parameter names (`CallSid`, `AccountSid`,
`From`, `To`, `Direction`, `CallStatus`, `ApiVersion`, and per verb `Digits`, `RecordingUrl`, `AnsweredBy`,
`DialCallStatus`...), as a POST (or a GET with them in the query), with the Standard Webhooks headers
(`webhook-id`, `webhook-timestamp`, `webhook-signature` over the body; over the query string for a GET) so
the application can check it comes from us. 10 s timeout, 1 MB of answer at most, 2xx only.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp

from softswitch.events import new_id
from softswitch.flows import twiml
from softswitch.flows.verbs import FlowError, Verb, decode_json
from softswitch.webhooks import signed_headers, url_problem

TIMEOUT_S = 10.0
MAX_BYTES = 1 << 20
XML_TYPES = ("text/xml", "application/xml")


async def fetch(
    http: aiohttp.ClientSession,
    url: str,
    params: dict[str, str],
    *,
    method: str = "POST",
    secret: str | None = None,
    allow_private: bool = False,
    expect_instructions: bool = True,
) -> list[Verb]:
    """The instructions at `url` for a call in the state `params` says; FlowError for anything but a
    2xx answer holding valid TwiML or JSON verbs (or, for a status callback with `expect_instructions`
    False, anything but a 2xx: then [] whatever the body)."""
    problem = url_problem(url, allow_private)
    if problem is not None:
        raise FlowError(f"instructions URL {url}: {problem}")
    body = urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if method == "GET":
        parts = urlsplit(url)
        query = "&".join(q for q in (parts.query, body.decode()) if q)
        url, body = urlunsplit(parts._replace(query=query)), query.encode()
        headers = {}
    if secret:
        headers |= signed_headers(secret, new_id("flw"), int(time.time()), body)
    try:
        async with http.request(
            method,
            url,
            data=None if method == "GET" else body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            allow_redirects=True,
        ) as resp:
            raw = await resp.content.read(MAX_BYTES + 1)
            status, ctype, final_url = resp.status, resp.content_type, str(resp.url)
    except TimeoutError:
        raise FlowError(f"{url}: no answer within {TIMEOUT_S:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise FlowError(f"{url}: {type(exc).__name__}: {exc}") from None
    if not 200 <= status < 300:
        raise FlowError(f"{url} answered {status}")
    if not expect_instructions:
        return []
    if len(raw) > MAX_BYTES:
        raise FlowError(f"{url}: instructions larger than 1 MB")
    if ctype == "application/json":
        return decode_json(raw)
    if ctype in XML_TYPES:
        return twiml.parse(raw, final_url)
    raise FlowError(f"{url}: instructions must be TwiML (text/xml) or JSON, not {ctype or 'no content type'}")
