"""moto's DynamoDB and Secrets Manager emulation, served one request at a time.

moto's own `moto_server` is threaded, and its DynamoDB backend is not safe under concurrent
TransactWriteItems (each transaction snapshots the table; under load totals drift and it answers
500 with an HTML page). This wraps moto's WSGI application in a single-threaded werkzeug server
on a loopback port, so every transaction runs alone, with the fixes of speedups.py.

    python local/moto/server.py [--port 0] [--port-file PATH]

With --port 0 (the default) the OS picks a free port; it is printed and, with --port-file,
written to that file once the server accepts connections.
"""

import argparse
import os
import signal
import sys

import speedups
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    create_backend_app,
)
from moto.server import MotoRequestHandler
from werkzeug.serving import make_server


def main() -> None:
    speedups.install()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("refusing to serve on a non-loopback address")

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        args.host,
        args.port,
        app,
        threaded=False,
        processes=1,
        request_handler=MotoRequestHandler,
    )
    port = server.socket.getsockname()[1]
    os.environ.setdefault("MOTO_PORT", str(port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"moto listening on http://{args.host}:{port}", flush=True)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
