import sys; sys.path.insert(0,"/tmp/qa_page")
from h import *
with sync_playwright() as p:
    b=launch(p); pg=b.new_page(viewport={"width":1400,"height":1000}); pg.goto("http://127.0.0.1:8612"); pg.wait_for_selector('[data-testid="stSidebar"]'); idle(pg)
    goto(pg,"Gallery"); shot(pg,"60_md_gallery_path", full=False)
    print(pg.locator('[data-testid="stSidebar"] [data-testid="stCaptionContainer"]').inner_html()[:600])
    b.close()
