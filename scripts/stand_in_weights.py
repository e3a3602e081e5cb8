from avtokens.rule import run_rule
from avtokens.visual_tokenizers import visual_tokenizer

model = dict(snakemake.params.model)
family = visual_tokenizer(model.pop("family"))
run_rule(snakemake, family.write_stand_in, snakemake.output[0], **model)
