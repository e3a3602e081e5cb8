from avtokens.report_pages import write_preset_page
from avtokens.rule import run_rule
from avtokens.shards import per_video_files

files = snakemake.input
run_rule(snakemake, write_preset_page, snakemake.output[0], snakemake.wildcards.preset,
         per_video_files(files.comparisons, "comparison"), per_video_files(files.psnr_plots, "plot"),
         files.token_table)  # fmt: skip
