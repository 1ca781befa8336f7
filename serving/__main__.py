from serving.cli import main

if __name__ == "__main__":  # the registry helper process imports this module too
    main()
