"""A TCP proxy between a host program and a board's serial socket that damages the stream: it flips bytes in
both directions and drops the host's connection once (the board keeps running; the host must reconnect to
the proxy). The board side is connected once and kept, as a real UART would be."""
import random
import select
import socket
import threading


class FaultProxy:
    def __init__(self, board_port, seed=0, flip_rate=1e-4, drop_after=None, quiet_bytes=3000):
        """flip_rate: chance per byte (both directions) that a bit of it is flipped, once the host has sent
        `quiet_bytes` bytes (the handshake goes through); drop_after: close the host's connection once, after
        it has sent that many bytes."""
        self.board_port = board_port
        self.rng = random.Random(seed)
        self.flip_rate, self.drop_after, self.quiet_bytes = flip_rate, drop_after, quiet_bytes
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.flipped = self.dropped = self.connections = 0
        self.from_host = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self):
        return f"socket://127.0.0.1:{self.port}"

    def _damage(self, data):
        if self.from_host <= self.quiet_bytes or not data:
            return data
        data = bytearray(data)
        for i in range(len(data)):
            if self.rng.random() < self.flip_rate:
                data[i] ^= 1 << self.rng.randrange(8)
                self.flipped += 1
        return bytes(data)

    def _run(self):
        board = None
        client = None
        try:
            while not self._stop:
                socks = [self.server] if client is None else [client]
                if board is not None:
                    socks.append(board)
                ready, _, _ = select.select(socks, [], [], 0.05)
                for s in ready:
                    if s is self.server:
                        client, _ = self.server.accept()
                        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        self.connections += 1
                        if board is None:
                            board = socket.create_connection(("127.0.0.1", self.board_port))
                            board.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    elif s is client:
                        data = client.recv(4096)
                        if not data:
                            client.close()
                            client = None
                            continue
                        self.from_host += len(data)
                        board.sendall(self._damage(data))
                        if self.drop_after is not None and self.from_host >= self.drop_after and not self.dropped:
                            self.dropped += 1
                            client.close()  # the host loses the line; whatever the board answers meanwhile is lost
                            client = None
                    elif s is board:
                        data = board.recv(4096)
                        if not data:
                            return  # the board is gone
                        if client is not None:
                            try:
                                client.sendall(self._damage(data))
                            except OSError:
                                client = None
        finally:
            for s in (client, board, self.server):
                if s is not None:
                    s.close()

    def close(self):
        self._stop = True
        self._thread.join(2)
