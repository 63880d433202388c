from jmed_edge.cli import main

raise SystemExit(main())
