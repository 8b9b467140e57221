"""Offline batch scoring: `brew batch`, requests from a file, scores to Parquet.

The same service path as the server, minus the transport: every request
goes through serving.service.ScoringService (limits, decode and render on
worker threads, the dispatcher's engine batches, assembly), so a row's
score is the one `brew serve` and `brew score` give for that request.

    inputs     plan the input (shards, chunks; JSONL or Parquet) and read a chunk
    rows       a row's payload -> the request message, or why not
    columns    a scored response -> one output row per candidate (the Parquet schema)
    scorer     a request through the service, as a Scored or Failed outcome
    shards     outcomes -> Parquet shards, errors.jsonl and the manifest (resume)
    local      the pipeline in this process: read ahead, score, write
    on_ray     the same stages on Ray Data: read + prepare tasks, scoring actors
    job        a job from start to summary: plan, resume, progress, either pipeline

Dependencies: pyarrow (and Ray for --ray), the `batch` extra.
"""
