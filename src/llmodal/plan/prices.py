"""Public per-token API prices for the models llmodal plans, to answer "should I host it myself?".

Date-stamped and sourced: each row says where the price was read and when. Prices change; the
row is a reference point, not a quote. The cheapest row for a model is the one compared against.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApiPrice:
    usd_in: float  # per 1M input tokens
    usd_out: float  # per 1M output tokens
    source: str

    def per_request(self, input_len: int, output_len: int) -> float:
        """USD for one request of this token mix."""
        return (input_len * self.usd_in + output_len * self.usd_out) / 1e6


_L31_70B = "meta-llama/Llama-3.1-70B-Instruct"
PRICES: dict[str, list[ApiPrice]] = {
    _L31_70B: [
        ApiPrice(0.13, 0.40, "DeepInfra meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo (FP8), "
                             "deepinfra.com/meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo/api, read 2026-11-24"),
        ApiPrice(0.29, 0.60, "AI Gateway meta/llama-3.1-70b-instruct, aigateway.sh/models/meta/llama-3.1-70b-instruct, "
                             "read 2026-11-24"),
    ],
}


def cheapest(model: str) -> ApiPrice | None:
    """The lowest-priced row for ``model`` by a 1:1 token mix, or None when none is listed."""
    rows = PRICES.get(model, [])
    return min(rows, key=lambda p: p.usd_in + p.usd_out) if rows else None
