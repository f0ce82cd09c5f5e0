"""hf-medai: medical AI recipes on the Hugging Face stack, evaluated honestly."""

import logging as _logging

__version__ = "0.1.0"


class _UnrelatedDeepSpeedNotice(_logging.Filter):
    """transformers imports DeepSpeed whenever it is installed; on a machine without a GPU DeepSpeed then warns
    "Setting accelerator to CPU" in runs that never use it. The filter sits on DeepSpeed's logger before DeepSpeed
    creates it (it keeps filters), and drops that one notice only."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Setting accelerator to CPU")


_logging.getLogger("DeepSpeed").addFilter(_UnrelatedDeepSpeedNotice())
