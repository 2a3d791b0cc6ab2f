localrules:
    download,


rule download:
    output:
        dataset_file("{dataset}"),
    log:
        "logs/download/{dataset}.log",
    params:
        url=lambda wc: config["data"].get("urls", {}).get(wc.dataset, ""),
        code=code_hash("download"),
    shell:
        "{ASCL} download {wildcards.dataset} --out {output} "
        "$( [ -n '{params.url}' ] && echo --url '{params.url}' ) > {log} 2>&1"


rule data_all:
    input:
        [dataset_file(config["data"]["source"])]
        + [dataset_file(name) for name in config["data"]["transfer"].values()],
