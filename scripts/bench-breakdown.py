#!/usr/bin/env python3
"""Where a run's time went inside the server, from two scrapes of its /metrics.

    bench-breakdown.py BEFORE.txt AFTER.txt > breakdown.json

Takes the difference of each latency histogram between the scrapes (so only the
requests of the run count, not the warm-up's) and estimates p50/p95/p99 the way
Prometheus' histogram_quantile does: linear within the bucket. Reported, in ms:
- `handler`: coupon_http_request_duration_seconds of POST issue, the server's own time
  from the request's arrival to its answer;
- `gate`: coupon_gate_admit_seconds, one admission (batched with others);
- `publish`: coupon_log_publish_seconds, one event from send to the broker's
  acknowledgement. With after-log the answer waits for it; with after-gate it runs in
  the background at the same rate, on the same producer and cores: the broker's
  floor under the stack's own load.
"""
import json
import re
import sys

LINE = re.compile(r'^(\w+)_bucket\{(.*)\} (\S+)$')


def buckets(path):
    """{(metric, labels without le): {le: count}}"""
    out = {}
    for line in open(path):
        m = LINE.match(line.strip())
        if not m:
            continue
        name, labels, value = m.groups()
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        le = pairs.pop('le')
        key = (name, tuple(sorted(pairs.items())))
        out.setdefault(key, {})[float('inf') if le == '+Inf' else float(le)] = float(value)
    return out


def quantile(q, cumulative):
    """histogram_quantile over {le: cumulative count}, in ms; None when empty."""
    les = sorted(cumulative)
    total = cumulative[les[-1]] if les else 0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for le in les:
        count = cumulative[le]
        if count >= rank:
            if le == float('inf'):
                return lower * 1e3
            return (lower + (le - lower) * (rank - below) / max(count - below, 1e-9)) * 1e3
        lower, below = le, count
    return lower * 1e3


def summary(before, after, name, want):
    """Quantiles of the summed series of `name` whose labels include `want`."""
    merged = {}
    for (metric, labels), counts in after.items():
        if metric != name or not all(item in labels for item in want.items()):
            continue
        prior = before.get((metric, labels), {})
        for le, count in counts.items():
            merged[le] = merged.get(le, 0.0) + count - prior.get(le, 0.0)
    if not merged:
        return None
    return dict(count=int(merged[max(merged)]), **{f'p{int(q * 100)}': quantile(q, merged) for q in (0.5, 0.95, 0.99)})


def main():
    before, after = buckets(sys.argv[1]), buckets(sys.argv[2])
    json.dump(dict(
        handler=summary(before, after, 'coupon_http_request_duration_seconds',
                        {'method': 'POST', 'route': '/v1/campaigns/{id}/issue'}),
        gate=summary(before, after, 'coupon_gate_admit_seconds', {'result': 'ok'}),
        publish=summary(before, after, 'coupon_log_publish_seconds', {'result': 'ok'}),
    ), sys.stdout)


if __name__ == '__main__':
    main()
