"""``automl storage-proxy``: one process holds the database connections and every worker
talks to it over gRPC (``grpc://HOST:PORT``); ``client`` is the worker's side, ``server``
the proxy's."""
