# The message spans lines, as Starlette's "python-multipart" one does.
raise ImportError("this module needs a package that is not installed. \nInstall it with: \n\n  pip install something\n")
