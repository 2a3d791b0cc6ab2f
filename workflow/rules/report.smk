localrules:
    table,


rule table:
    input:
        table_inputs,
    output:
        md="results/paper/{table}.md",
        csv="results/paper/{table}.csv",
    log:
        "logs/paper/{table}.log",
    params:
        spec=lambda wc: ascl_config.settings_json(table_spec(wc.table)),
        code=code_hash("table"),
    shell:
        "{ASCL} table --spec {params.spec:q} --results results --out-md {output.md} "
        "--out-csv {output.csv} > {log} 2>&1"


for _table in sorted(config["paper"]):

    rule:
        name:
            _table
        input:
            f"results/paper/{_table}.md",


localrules:
    paper_summary,


rule paper_summary:
    input:
        expand("results/paper/{table}.csv", table=sorted(config["paper"])),
    output:
        "results/metrics.json",
    log:
        "logs/paper/summary.log",
    shell:
        "{ASCL} summary {input} --out {output} > {log} 2>&1"
