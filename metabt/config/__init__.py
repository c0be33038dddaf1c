"""Run configuration: the defaults of a run (:mod:`metabt.config.defaults`) and the TOML
config-file schema (:mod:`metabt.config.files`)."""

__all__: list[str] = []
