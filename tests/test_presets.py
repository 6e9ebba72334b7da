"""The full-size presets: Phi-3-vision and Phi-3.5-vision, the same architecture with other settings."""

from phi3v_tutorial import architecture
from phi3v_tutorial.phi3v import Phi3VConfig, num_image_tokens
from phi3v_tutorial.phi3v.configuration_phi3_v import PRESET_NUM_CROPS, PRESETS

PHI3, PHI35 = "microsoft/Phi-3-vision-128k-instruct", "microsoft/Phi-3.5-vision-instruct"


def test_both_presets_build_the_same_4_1_billion_parameter_architecture():
    counts = {name: sum(p.numel() for p in architecture.meta_model(Phi3VConfig.from_preset(name)).parameters())
              for name in PRESETS}
    assert counts == {PHI3: 4_146_621_440, PHI35: 4_146_621_440}


def test_phi35_differs_in_longrope_factors_sliding_window_and_padding_only():
    differences = architecture.config_differences(Phi3VConfig.from_preset(PHI3), Phi3VConfig.from_preset(PHI35))
    assert {key.split(".")[0] for key in differences} <= {"rope_scaling", "rope_parameters", "sliding_window",
                                                          "pad_token_id"}
    assert differences["sliding_window"] == ("131072", "262144")
    assert differences["rope_parameters.long_factor"] == ("48 values, 1.03 .. 64.8", "48 values, 1.08 .. 64.8")
    assert "rope_parameters.rope_theta" not in differences, "the same base frequency"


def test_token_counts_at_each_checkpoints_default_crops():
    # a 640 x 480 photo: a 3 x 4 grid of crops at 16 (1,921 tokens), 2 x 2 at 4 (757)
    assert {name: num_image_tokens(640, 480, crops) for name, crops in PRESET_NUM_CROPS.items()} == {
        PHI3: 1921, PHI35: 757}
