"""The HTTP/JSON transport: the scoring service on an HTTP port beside gRPC.

One process, two transports over the same ScoringService (serving.service):
the same dispatcher, admission, limits, default deadline, lifecycle,
metrics, TLS files and bearer token. Like the gRPC servicer, this package
only translates: JSON -> the request's shape and a decode step -> the
service -> JSON, and errors to HTTP status codes (serving.http.errors).

    app.py       the FastAPI application: routes, health, /metrics, /docs
    errors.py    the status table and the error body (OpenAI's/SGLang's error object)
    edge.py      what every request passes: size limit, bearer token, replica header,
                 the x-request-timeout deadline, client disconnects
    native.py    POST /v1/brew/score, GET /v1/brew/tasks: brew.v1 in its JSON mapping
    sglang.py    POST /v1/score: SGLang's ScoringRequest/ScoringResponse
    vllm.py      POST /generative_scoring: vLLM's GenerativeScoringRequest/Response
    rerank.py    POST /v1/rerank: the Jina/Cohere rerank shape, through a task template
    server.py    uvicorn on the server's event loop, started and drained with gRPC
"""
