"""The serial link to a board: the byte stream (transport), frames and messages (protocol), one request at a
time (connection.Link) or several in flight (pipeline.Pipeline), and the clients of the model on the board
(model_client: CLASSIFY, PROFILE; trainer_client: TRAIN, CONFIG, STATS, CHECKPOINT)."""
from mcu_train.errors import BoardGone  # noqa: F401
from mcu_train.link.connection import BoardError, BoardRestarted, Link  # noqa: F401
from mcu_train.link.pipeline import Pipeline  # noqa: F401
from mcu_train.link.transport import connect_serial, open_serial  # noqa: F401
