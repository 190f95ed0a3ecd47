"""Wait until every HOST:PORT given accepts a TCP connection, then exit 0: an init container's
way of starting a pod after the servers it needs (docker-compose.yml's depends_on). Through a
Service, a connection succeeds only once a ready pod backs it. Python's standard library only,
so that both of our images (and any with python) run it."""

import socket
import sys
import time

for target in sys.argv[1:]:
    host, _, port = target.rpartition(":")
    waited = 0
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
            break
        except OSError as exc:
            if waited % 30 == 0:
                print(f"waiting for {target}: {exc}", flush=True)
            time.sleep(2)
            waited += 2
    print(f"{target} answers", flush=True)
