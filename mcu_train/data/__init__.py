"""Where sensor windows come from: the UCI HAPT data set (hapt), and what is done to windows on their way to a
board (windows: rotations, label masks). `from mcu_train import data` gives both."""
from mcu_train.data.hapt import (AXES, CLASS_NAMES, HOP, INPUT_OFFSET, INPUT_SCALE, PEOPLE,  # noqa: F401
                                 SAMPLE_RATE_HZ, SPLITS, WINDOW, WIRE_COUNTS_PER_G, Windows, default_data_path,
                                 g_to_wire, load_recordings, people_windows, person_windows, placement_rotation,
                                 split_windows, to_model_input, wire_to_model_input)
from mcu_train.data.windows import label_mask, random_rotations, rotate, rotation_matrices  # noqa: F401
