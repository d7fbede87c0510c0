"""Benchmark: the payload codec alone, on the payloads of one real billing period.

Takes every payload of a saved history (tests/workflows/histories/, a finalized period of
the lean shape: input, usage, draft, fee edit, finalization, webhook, result) and times
``config.codec.EncryptionCodec`` encoding then decoding all of them, as the writer and one
reader of that history would. No server: the figure is the codec's own CPU per period,
which the end-to-end close and fee-edit runs (bench/README.md) hide in their noise.

    .venv/bin/python bench/codec.py                  # 2,000 rounds
    .venv/bin/python bench/codec.py --smoke          # 20 rounds

Writes ``bench/results/codec.json``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _stack import bench_parser, finish, machine
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory

from config.codec import EncryptionCodec, PayloadKey

HISTORY = Path(__file__).parents[1] / "tests/workflows/histories/lean_billing_period_finalized.json"


def payloads_in(message: Message) -> Iterator[Payload]:
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            items = list(value.values()) if value_field.type == value_field.TYPE_MESSAGE else []
        elif field.is_repeated:
            items = list(value)
        else:
            items = [value]
        for item in items:
            if isinstance(item, Payload):
                yield item
            else:
                yield from payloads_in(item)


async def bench(rounds: int) -> dict[str, Any]:
    history = WorkflowHistory.from_json("bench", HISTORY.read_text())
    payloads = [
        payload
        for event in history.events
        for payload in payloads_in(event)
        if b"json" in payload.metadata.get("encoding", b"")  # what the codec would seal
    ]
    codec = EncryptionCodec([PayloadKey("new", os.urandom(32)), PayloadKey("old", os.urandom(32))])
    sealed = await codec.encode(payloads)
    assert await codec.decode(sealed) == payloads
    encode_us, decode_us = [], []
    for _ in range(rounds):
        began = time.perf_counter()
        sealed = await codec.encode(payloads)
        encoded = time.perf_counter()
        await codec.decode(sealed)
        encode_us.append((encoded - began) * 1e6)
        decode_us.append((time.perf_counter() - encoded) * 1e6)
    plain_bytes = sum(p.ByteSize() for p in payloads)
    sealed_bytes = sum(p.ByteSize() for p in sealed)
    return {
        "benchmark": "codec",
        "history": HISTORY.name,
        "payloads_per_period": len(payloads),
        "plain_bytes_per_period": plain_bytes,
        "sealed_bytes_per_period": sealed_bytes,
        "rounds": rounds,
        "encode_us_per_period_median": round(statistics.median(encode_us), 1),
        "decode_us_per_period_median": round(statistics.median(decode_us), 1),
        **machine(),
    }


def main() -> None:
    parser = bench_parser(__doc__, "20 rounds")
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    result = asyncio.run(bench(20 if args.smoke else args.rounds))
    summary = (
        f"{result['payloads_per_period']} payloads ({result['plain_bytes_per_period']:,} -> "
        f"{result['sealed_bytes_per_period']:,} bytes) per period: encode "
        f"{result['encode_us_per_period_median']} us, decode "
        f"{result['decode_us_per_period_median']} us (median of {result['rounds']}); "
        f"load {result['load_average_at_start']}"
    )
    finish("codec", result, args.output, summary)


if __name__ == "__main__":
    main()
