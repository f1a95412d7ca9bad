from gknet.data.folders import FolderDataset, match_by_stem
from gknet.data.iharmony4 import IHarmony4
from gknet.data.samples import Sample, SampleDataset

__all__ = ["FolderDataset", "IHarmony4", "Sample", "SampleDataset", "match_by_stem"]
