from levqor.entry import main

main()
