"""Where sensor windows come from: the UCI HAPT data set (hapt), a user's recordings or a live stream (source,
with one module per format), and what is done to windows on their way to a board (windows: cutting a
recording as a model's metadata says, rotations, label masks). `from mcu_train import data` gives them."""
from mcu_train.data.hapt import (AXES, CLASS_NAMES, HOP, INPUT_OFFSET, INPUT_SCALE, PEOPLE,  # noqa: F401
                                 SAMPLE_RATE_HZ, SPLITS, WINDOW, WIRE_COUNTS_PER_G, Windows, default_data_path,
                                 g_to_wire, load_recordings, people_windows, person_windows, placement_rotation,
                                 split_windows, to_model_input, wire_to_model_input)
from mcu_train.data.recording import ClassMap, classes_in  # noqa: F401
from mcu_train.data.source import HaptSource, LiveFeed, open_source  # noqa: F401
from mcu_train.data.windows import (WindowSet, WindowSpec, keep_labels, label_mask, random_rotations,  # noqa: F401
                                    rotate, rotation_matrices)
