from amd_pipeline.cli import main

main()
