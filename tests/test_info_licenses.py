"""`speechkit info` lists each bundled model's training-data licences and model card."""
from speechkit.cli.info import installation_info


def test_bundled_models_carry_licences_and_cards():
    models = installation_info()["bundled_models"]
    assert models, "speechkit ships bundled models"
    for model in models:
        assert "training_data_licenses" in model
        assert model["card"] and model["card"].endswith(".md")


def test_every_action_names_its_default_bundled_model():
    """enhance, separate and aec each have a bundled default, marked as such."""
    info = installation_info()
    defaults = info["default_models"]
    assert set(defaults) == {"enhance", "separate", "aec"}
    marked = {model["name"] for model in info["bundled_models"] if model["default"]}
    assert marked == set(defaults.values())
