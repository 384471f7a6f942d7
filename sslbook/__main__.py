from sslbook.cli import main

raise SystemExit(main())
