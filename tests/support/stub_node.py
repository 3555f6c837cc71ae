"""A stand-in upstream Ethereum node on loopback for the JSON-RPC door's tests: answers what
`eth_sendTransaction` fills from and records every method that reaches it. Tests subclass it to
hold a method (`answer`) or to lie (`reply`)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar


class StubNode:
    ANSWERS: ClassVar[dict[str, Any]] = {
        "eth_chainId": "0x1", "eth_getTransactionCount": "0x0", "eth_blockNumber": "0x10",
        "eth_maxPriorityFeePerGas": "0x1", "eth_gasPrice": "0x2", "eth_estimateGas": "0x5208",
        "eth_getBlockByNumber": {"baseFeePerGas": "0x1", "number": "0x1"},
        "eth_getTransactionByHash": None, "eth_sendRawTransaction": "0x" + "ab" * 32,
    }

    def __init__(self) -> None:
        self.methods: list[str] = []
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                node.methods.append(body["method"])
                data = json.dumps(
                    {"jsonrpc": "2.0", "id": body["id"], **node.reply(body["method"])}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reply(self, method: str) -> dict[str, Any]:
        """The reply's `result` or `error` member for `method`."""
        return {"result": self.answer(method)}

    def answer(self, method: str) -> Any:
        return self.ANSWERS.get(method, "0x0")  # a real node would run admin_addPeer & co.

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
