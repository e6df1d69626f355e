"""Recipe data: corpus adapters, the offline mini corpus, dynamic mixing datasets, fixed sets.

Quick start (16 kHz denoising on the mini corpus built from ``../shared/data``)::

    from recipes.data.datasets import EnhancementConfig, EnhancementDataset, ReverbConfig
    train = EnhancementDataset.from_minicorpus("train", EnhancementConfig(segment_seconds=4.0),
                                               length=10000, seed=0)
    item = train[0]  # {"mixture": [1, T], "targets": [1, 1, T], "noise": [1, T], "snr_db": ..., ...}
    train.set_epoch(epoch)  # new mixtures each epoch, identical across workers and ranks

Validation and test sets are fixed files: see ``recipes/data/fixedset.py`` and
``python -m recipes.prepare_data --help``.
"""
