from elizadb.cli import main

raise SystemExit(main())
