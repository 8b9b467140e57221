"""`brew loadtest cluster`: what member affinity and more replicas buy, through Envoy.

    brew loadtest cluster --out runs/cluster --engine vllm --replicas 1,2 --concurrency 16 --duration 60

Arms, one workload whose members come back (--members, --repeat-share):

    1 replica                   brew cluster --replicas 1
    N replicas, affinity        requests carry x-brew-member: Envoy's consistent hash
    N replicas, least request   no header: Envoy's least request over the same replicas

Every run of an arm gets a freshly started cluster (`brew cluster` on free
ports; empty prefix caches) and the same requests (one seed): only the
replica count and the routing differ. Then a closed-loop warm-up with other
members (--warmup seconds at --concurrency callers, or WARMUP_CONCURRENCY
with --rate; not reported: the first batches pay for shapes not seen yet), and
the measured run: closed-loop at --concurrency (saturation: candidates/s is
the capacity) or open-loop at --rate, with every replica's /metrics summed
for the share of prompt tokens served from the prefix cache. The prefix
cache that affinity is for is vLLM's: the torch engine reuses a prefix only
within a request, so with it the routing changes little.

Over each measured run the CPU seconds of the whole cluster's process tree
(loadtest.host_cost: `brew cluster`, Envoy, every replica and its engine
processes) are read, per candidate scored OK: Envoy's share and the
replicas' share apart, so the cost of one replica per candidate can be read
off for a host with more cores than this one.

Writes cluster.json (settings and every run) and cluster.md (medians of the
repeats, and the ratios affinity / least request and N / 1 replicas) under
--out, next to every run's own files.

Modules:

    command  the command: every arm measured, then cluster.json and cluster.md
    systems  `brew cluster` as a subprocess (the end-to-end tests start it too)
    report   the arms, their runs and results, the ratios and the markdown report
"""
