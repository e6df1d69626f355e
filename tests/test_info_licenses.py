"""`speechkit info` lists each bundled model's training-data licences and model card."""
from speechkit.cli.info import installation_info


def test_bundled_models_carry_licences_and_cards():
    models = installation_info()["bundled_models"]
    assert models, "speechkit ships bundled models"
    for model in models:
        assert "training_data_licenses" in model
        assert model["card"] and model["card"].endswith(".md")
