# mp4 -> Cosmos visual tokens + DAC audio tokens -> reconstruction -> muxed mp4.
# The README explains the outputs; rules/common.smk holds the config logic.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/weights.smk"
include: "rules/example.smk"
include: "rules/audio.smk"
include: "rules/visual.smk"
include: "rules/mux.smk"
include: "rules/report.smk"


if SHARDS:

    include: "rules/shards.smk"



rule all:
    input:
        get_final_output(),


onsuccess:
    report_outputs()
    check_failed_videos(fail=not LEFT_OUT_VIDEOS)
    check_left_out_videos(fail=True)


onerror:
    check_failed_videos(fail=False)
    check_left_out_videos(fail=False)
