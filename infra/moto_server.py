"""moto server for closeflow's local tests and stacks.

Two differences from `moto_server`:
- Requests are applied one at a time. moto's DynamoDB does not make a conditional write
  atomic with respect to a concurrent one, while DynamoDB does (per item); without this,
  two racing conditional updates could both succeed, which DynamoDB never allows.
- It binds a free loopback port itself and writes it to the file given as argv[1], so
  parallel runs never fight over a port.
"""

import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


class Serialized:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            # Materialise the body inside the lock: the write happens while producing it.
            return list(self.app(environ, start_response))


def main():
    port_file = sys.argv[1]
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1", 0, Serialized(app), threaded=True, request_handler=MotoRequestHandler
    )
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.port))
    import os

    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
