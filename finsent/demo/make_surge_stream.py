"""Build finsent/demo/surge_stream.csv: bundled stock tweets with a negative oil-news surge injected.

The stream is NORMAL_BEFORE tweets, then SURGE_SPAN tweets with SURGE_HEADLINES interleaved, then
NORMAL_AFTER tweets. Replayed at 25 messages/s (the demo's default rate) that is about 12 s of normal
traffic, 20 s in which ``Energy | Oil`` turns overwhelmingly negative, and 2.5 minutes of normal traffic
in which the surge leaves the 1-minute window, so the demo alert fires and resolves once per cycle.
Every surge headline was checked with ``finsent classify`` against the shipped model: topic
``Energy | Oil`` (topic score >= 0.88) and sentiment negative (p_negative >= 0.76).

    python -m finsent.demo.make_surge_stream [--source data/stock_tweets_stream_2020.csv]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[1] / "data" / "stock_tweets_stream_2020.csv"
DEFAULT_OUTPUT = HERE / "surge_stream.csv"
NORMAL_BEFORE = 300
SURGE_SPAN = 500
NORMAL_AFTER = 3500

SURGE_HEADLINES: tuple[str, ...] = (
    "Oil prices plunge 8% as OPEC+ talks collapse without a deal",
    "Crude oil crashes to a 20-year low as storage tanks fill up",
    "Oil slumps after Saudi Arabia slashes prices and vows to pump more",
    "Shale producers slash budgets as oil prices sink below $25",
    "WTI crude futures plunge below zero for the first time in history",
    "Oil falls sharply as U.S. crude stockpiles jump by a record amount",
    "Oil drops as the IEA warns of the worst demand collapse in a decade",
    "Natural gas prices sink to multi-year lows on mild weather and oversupply",
    "Oil sinks as the price war between Saudi Arabia and Russia escalates",
    "Crude extends losses as refinery outages cut demand",
    "Oil prices slide for a fifth day as the global glut worsens",
    "Oil plunges as pandemic lockdowns crush fuel demand",
    "Brent crude sinks 12% in its worst day since 1991",
    "Oil tumbles as OPEC+ fails to agree on deeper production cuts",
    "U.S. crude plunges as traders run out of places to store oil",
    "Oil prices collapse as jet fuel demand evaporates",
    "Crude oil falls to an 18-year low on fears of a global recession",
    "Oil slides as Chinese demand for crude weakens sharply",
    "Oil crashes as Saudi Arabia launches a price war",
    "Crude prices fall after a surprise build in U.S. gasoline inventories",
    "Oil heads for its biggest monthly loss on record",
    "Oil drops as Libya restarts exports into an oversupplied market",
    "Oil tumbles as the EIA slashes its demand forecast",
    "Crude sinks as tankers pile up unsold cargoes at sea",
    "Oil falls as U.S. drillers keep pumping despite the price collapse",
    "Oil extends its rout as the demand outlook darkens",
    "Crude oil plummets as the OPEC+ alliance breaks down",
    "Oil prices sink as refiners cut runs and fuel demand slumps",
    "Oil slides as Russia rejects deeper output cuts",
    "Gasoline demand plunges to a 30-year low, dragging crude lower",
    "Oil falls for a third straight week on a swelling glut",
    "Crude tumbles as storage at Cushing nears full capacity",
    "Oil prices drop as hopes for a production deal fade",
    "Oil plunges as Saudi Aramco cuts its official selling prices",
    "U.S. oil futures crash as the May contract expires",
    "Oil sinks to its lowest since 2002 as lockdowns spread",
    "Crude slides as a global recession looms over fuel demand",
    "Natural gas futures tumble as LNG cargoes are cancelled",
)
"""News-style headlines the shipped model labels Energy | Oil, negative."""


def build(source: Path, output: Path) -> int:
    """Write the surge stream (text, cashtags) built from ``source``; the number of rows written."""
    with source.open(encoding="utf-8", newline="") as handle:
        tweets = [(row["text"], row.get("cashtags") or "") for row in csv.DictReader(handle) if row["text"]]
    needed = NORMAL_BEFORE + SURGE_SPAN + NORMAL_AFTER
    if len(tweets) < needed:
        raise SystemExit(f"{source}: need {needed} tweets, found {len(tweets)}")
    rows = list(tweets[:NORMAL_BEFORE])
    span = tweets[NORMAL_BEFORE : NORMAL_BEFORE + SURGE_SPAN]
    step = len(span) / len(SURGE_HEADLINES)
    inserts = {round(index * step): headline for index, headline in enumerate(SURGE_HEADLINES)}
    for index, tweet in enumerate(span):
        if index in inserts:
            rows.append((inserts[index], ""))
        rows.append(tweet)
    rows.extend(tweets[NORMAL_BEFORE + SURGE_SPAN : needed])
    with output.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "cashtags"])
        writer.writerows(rows)
    return len(rows)


def main() -> None:
    """Command-line entry: rebuild the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    count = build(args.source, args.output)
    print(f"wrote {count} rows to {args.output}")


if __name__ == "__main__":
    main()
