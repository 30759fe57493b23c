"""The CLI's way to a running Keel: a small synchronous client for the management API.

Failures become `CliError`, which click prints as `error: <message>` and exits with status 1.
The API key goes in the Authorization header only; it is never part of a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

import click
import httpx

__all__ = ["DEFAULT_URL", "CliError", "KeelClient"]

DEFAULT_URL = "http://127.0.0.1:4000"


class CliError(click.ClickException):
    """A failure the user can act on, printed as `error: <message>`."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def _error_message(response: httpx.Response) -> str:
    """The message of an OpenAI-shaped (or FastAPI-shaped) error body, else the status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(body.get("detail"), str):
            return str(body["detail"])
    return f"Keel answered HTTP {response.status_code} {response.reason_phrase}"


@dataclass
class KeelClient:
    """Talks to `<url>/api/v1` with an optional bearer key."""

    url: str = DEFAULT_URL
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    transport: httpx.BaseTransport | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request; the decoded JSON answer, or CliError."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        base = self.url.rstrip("/")
        try:
            with httpx.Client(timeout=self.timeout, transport=self.transport) as http:
                response = http.request(
                    method, f"{base}/api/v1{path}", json=json, params=params, headers=headers
                )
        except httpx.ConnectError:
            raise CliError(f"cannot reach Keel at {base}: is `keel serve` running?") from None
        except httpx.TimeoutException:
            raise CliError(f"Keel at {base} did not answer within {self.timeout:g} s") from None
        except httpx.InvalidURL:
            raise CliError(f"not a valid Keel URL: {base!r} (see --url, KEEL_URL)") from None
        except httpx.HTTPError as exc:
            raise CliError(f"request to Keel at {base} failed: {type(exc).__name__}") from None
        if response.is_error:
            raise CliError(_error_message(response))
        try:
            return response.json()
        except ValueError:
            raise CliError(f"Keel at {base} answered something that is not JSON") from None
