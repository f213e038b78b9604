"""The recipe's ``serve:`` section: what `tunewright serve` loads and the limits it enforces."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    insecure: bool = Field(
        False, description="serve without inference keys on a non-loopback host: anyone who reaches it can use the API")
    allowed_hosts: list[str] | None = Field(
        None, description="Host header values accepted ('name' or 'name:port'); None: localhost, 127.0.0.1 and "
                          "[::1] on the bound port, plus serve.host when it is not a wildcard such as 0.0.0.0")
    adapters: list[str] | None = Field(
        None, description="registered adapter names or folders to load at start; None: every registered adapter")
    max_adapters: int = Field(16, ge=1, description="adapters held in memory at once")
    merge_hot_adapter: bool = Field(
        True, description="a batch for one LoRA adapter runs on merged weights (one extra copy of the base's linear "
                          "layers in memory) at base-model speed")
    max_batch_size: int = Field(8, ge=1, description="requests decoded together in one batch")
    batch_wait_ms: int = Field(
        100, ge=0, description="at most this long a batch waits for the clients of the previous batch to come back")
    max_queue: int = Field(64, ge=1, description="waiting requests beyond this are answered 429")
    max_request_bytes: int = Field(1_000_000, ge=1024)
    max_tokens_limit: int = Field(1024, ge=1, description="the largest max_tokens a request may ask for")
    default_max_tokens: int = Field(256, ge=1)
    request_timeout_s: float = Field(120.0, gt=0, description="queue wait plus generation")
    log_requests: bool = Field(False, description="opt-in: write requests and answers to logs/requests/")
    redact_pii: bool = Field(True, description="redact e-mails, phone numbers, cards... in logs and feedback rows")
    api_keys_env: str = Field("TUNEWRIGHT_API_KEYS", description="comma-separated inference keys; unset: no key needed")
    admin_keys_env: str = Field("TUNEWRIGHT_ADMIN_KEYS", description="comma-separated admin keys; unset: admin API off")
    feedback_queue: str = Field("feedback", description="review queue that corrected answers join")
