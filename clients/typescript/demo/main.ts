// The demo page: sign up, a space, three moments and a voice note, then a story whose chapters
// appear as they are written and whose images appear as they are drawn.
import {
  type Chapter, type IllustrationEvent, type JobProgress, createClient,
} from "../src/index.js";

const api = new URLSearchParams(location.search).get("api") ?? "http://localhost:3000";
const client = createClient({ baseUrl: api });
let spaceId = "";
let firstNoteId = "";

const $ = <T extends HTMLElement = HTMLElement>(selector: string): T => {
  const element = document.querySelector<T>(selector);
  if (!element) throw new Error(`no ${selector}`);
  return element;
};
const say = (selector: string, text: string): void => { $(selector).textContent = text; };

function button(selector: string, action: () => Promise<void>): void {
  $(selector).addEventListener("click", () => {
    say("#error", "");
    action().catch((error: unknown) => say("#error", String(error)));
  });
}

say("#api", api);

button("#signup", async () => {
  const email = $<HTMLInputElement>("#email").value;
  await client.auth.register({ email, password: $<HTMLInputElement>("#password").value });
  say("#who", `Signed in as ${email}`);
});

button("#create-space", async () => {
  const space = await client.spaces.create({ title: $<HTMLInputElement>("#space-title").value });
  spaceId = space.id;
  say("#space", `Space “${space.title}” created`);
});

button("#add-moments", async () => {
  const rows = [...document.querySelectorAll(".moment")];
  for (const [index, row] of rows.entries()) {
    const note = await client.notes.create(spaceId, {
      title: row.querySelector<HTMLInputElement>(".moment-title")?.value ?? "",
      textContent: row.querySelector<HTMLTextAreaElement>(".moment-text")?.value ?? "",
      timestamp: Date.now() - (rows.length - index) * 3_600_000,
    });
    firstNoteId ||= note.id;
    const item = document.createElement("li");
    item.textContent = note.title ?? "";
    $("#moments").append(item);
  }
});

button("#upload-audio", async () => {
  const file = $<HTMLInputElement>("#audio").files?.[0];
  if (!file) throw new Error("choose an audio file first");
  say("#transcription", "Transcribing…");
  const media = await client.notes.upload(spaceId, firstNoteId, file);
  if (!media.transcriptionJob) throw new Error("that file is not audio");
  const done = await client.jobs.wait(media.transcriptionJob);
  say("#transcription", `Transcription: ${done.result?.transcription ?? ""}`);
});

function showImage(image: HTMLImageElement, url: string): void {
  image.alt = image.dataset.description ?? "";
  image.src = url;
}

function showChapter(chapter: Chapter): void {
  const item = document.createElement("li");
  item.dataset.position = String(chapter.position);
  const title = document.createElement("h3");
  title.textContent = chapter.title;
  const content = document.createElement("p");
  content.textContent = chapter.content;
  const image = document.createElement("img");
  image.alt = ""; // described once drawn, not shown as a broken image meanwhile
  image.dataset.description = chapter.illustrationPrompt ?? chapter.title;
  if (chapter.generatedImageUrl) showImage(image, chapter.generatedImageUrl);
  item.append(title, content, image);
  $("#chapters").append(item);
}

button("#generate", async () => {
  $("#chapters").replaceChildren();
  const status = $("#job");
  const job = await client.stories.generate(spaceId);
  status.dataset.jobId = job.id;
  status.textContent = job.status;
  const done = await client.jobs.events(job.id, {
    onEvent: (event) => {
      if (event.type === "status") status.textContent = (event.data as { status: string }).status;
      if (event.type === "progress") {
        const progress = event.data as JobProgress;
        status.textContent = `running: ${progress.step} ${progress.current}/${progress.total}`;
      }
      if (event.type === "restart") $("#chapters").replaceChildren();
      if (event.type === "chapter") showChapter(event.data as Chapter);
      if (event.type === "illustration") {
        const drawn = event.data as IllustrationEvent;
        const image = document.querySelector<HTMLImageElement>(
          `#chapters li[data-position="${drawn.position}"] img`);
        if (image && !image.src) showImage(image, drawn.imageUrl);
      }
    },
  });
  status.textContent = done?.data.status ?? "over";
  status.dataset.final = done?.data.status ?? "";
});
