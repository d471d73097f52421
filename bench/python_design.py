#!/usr/bin/env python3
"""The same design in Python, for the comparison in BENCHMARKS.md (issue 20): asyncio, one
`websockets` connection per 500 tokens (subscribe, PING every 10 s), every frame parsed with
`json.loads`, `last_trade_price` events batched (1,000 or 100 ms) and written with asyncpg's
binary COPY into a plain table with the natural key, duplicates skipped through a staging
table, as polytape's slow path does. What a careful Python programmer would ship: no
orjson, no uvloop (the stock event loop), prices and sizes as exact `Decimal`.

    python3 bench/python_design.py DATABASE_DSN WS_URL N_TRADES

Reads the open tokens from DSN's `markets` table, stops once N trades are stored or none
came for 3 s (the exchange also trades tokens nobody holds), prints one line:
`PYTHON trades=<n> seconds=<wall> cpu=<process CPU s>`, both up to the last commit.
Needs `pip install asyncpg websockets`.
"""

import asyncio
import json
import resource
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal

import asyncpg
import websockets

CHUNK = 500
BATCH = 1000
MAX_AGE = 0.1


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def reader(url, tokens, queue):
    async with websockets.connect(url, max_size=1 << 22, ping_interval=None) as ws:
        await ws.send(json.dumps({"type": "market", "assets_ids": tokens[:100], "initial_dump": False}))
        for i in range(100, len(tokens), 100):
            await ws.send(json.dumps({"operation": "subscribe", "assets_ids": tokens[i:i + 100],
                                      "initial_dump": False}))

        async def ping():
            while True:
                await asyncio.sleep(10)
                await ws.send("PING")

        pinger = asyncio.create_task(ping())
        try:
            async for frame in ws:
                if frame == "PONG":
                    continue
                try:
                    data = json.loads(frame)
                except ValueError:
                    continue
                events = data if isinstance(data, list) else [data]
                for e in events:
                    if not isinstance(e, dict) or e.get("event_type") != "last_trade_price":
                        continue
                    try:
                        await queue.put((
                            e["asset_id"], e["market"], Decimal(e["price"]), Decimal(e["size"]),
                            e["side"],
                            datetime.fromtimestamp(int(e["timestamp"]) / 1000, tz=timezone.utc),
                            e.get("transaction_hash"),
                        ))
                    except (KeyError, ValueError, ArithmeticError):
                        continue
        finally:
            pinger.cancel()


async def writer(pool, queue, target, done):
    stored, last = 0, (time.monotonic(), cpu_seconds())
    async with pool.acquire() as con:
        while stored < target:
            try:
                first = await asyncio.wait_for(queue.get(), 3.0 if stored else 120.0)
            except asyncio.TimeoutError:
                break
            batch = [first]
            deadline = time.monotonic() + MAX_AGE
            while len(batch) < BATCH:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), left))
                except asyncio.TimeoutError:
                    break
            async with con.transaction():
                await con.execute("CREATE TEMP TABLE IF NOT EXISTS staging "
                                  "(LIKE py_trades) ON COMMIT DELETE ROWS")
                await con.copy_records_to_table("staging", records=batch)
                r = await con.execute("INSERT INTO py_trades SELECT * FROM staging "
                                      "ON CONFLICT DO NOTHING")
            stored += int(r.split()[-1])
            last = (time.monotonic(), cpu_seconds())
    done.set_result((stored, last))


async def main(dsn, url, n):
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    async with pool.acquire() as con:
        await con.execute("""
            CREATE TABLE IF NOT EXISTS py_trades (
                asset_id text NOT NULL, market text NOT NULL, price numeric NOT NULL,
                size numeric NOT NULL, side text NOT NULL, traded_at timestamptz NOT NULL,
                transaction_hash text)""")
        await con.execute("""
            CREATE UNIQUE INDEX IF NOT EXISTS py_trades_key ON py_trades
                (asset_id, traded_at, price, size, side, transaction_hash) NULLS NOT DISTINCT""")
        rows = await con.fetch("SELECT token_ids FROM markets WHERE NOT closed AND enable_order_book")
    tokens = [t for r in rows for t in r["token_ids"]]
    queue = asyncio.Queue(maxsize=10000)
    done = asyncio.get_running_loop().create_future()
    cpu0, t0 = cpu_seconds(), time.monotonic()
    readers = [asyncio.create_task(reader(url, tokens[i:i + CHUNK], queue))
               for i in range(0, len(tokens), CHUNK)]
    write = asyncio.create_task(writer(pool, queue, n, done))
    stored, (t_last, cpu_last) = await done
    wall, cpu = t_last - t0, cpu_last - cpu0
    for r in readers:
        r.cancel()
    write.cancel()
    await pool.close()
    print(f"PYTHON trades={stored} seconds={wall:.2f} cpu={cpu:.2f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
