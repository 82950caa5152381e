from edgeyolo.cli import app

app(prog_name="edgeyolo")
