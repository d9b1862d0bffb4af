// The demo page: sign up, a space, three moments and a voice note, then a story whose chapters
// appear as they are written and whose images appear as they are drawn, then its film: the
// steps and each scene's voice as they happen, and the video with its subtitles.
import {
  type Chapter, type FilmResult, type IllustrationEvent, type JobProgress, type NarrationEvent,
  type VideoScript, createClient,
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
    const title = row.querySelector<HTMLInputElement>(".moment-title")?.value ?? "";
    const textContent = row.querySelector<HTMLTextAreaElement>(".moment-text")?.value ?? "";
    if (!title && !textContent) continue; // a row left empty is no moment
    const note = await client.notes.create(spaceId, {
      title, textContent, timestamp: Date.now() - (rows.length - index) * 3_600_000,
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

/** One line per step; a step's line is updated while it goes on (render: percent). */
function showStep(progress: JobProgress): void {
  const steps = $("#film-steps");
  let line = steps.lastElementChild as HTMLElement | null;
  if (line?.dataset.step !== progress.step) {
    line = document.createElement("li");
    line.dataset.step = progress.step;
    steps.append(line);
  }
  line.textContent = progress.step === "render" ? `render ${progress.current}%`
    : `${progress.step} ${progress.current}/${progress.total}`;
}

function showNarration(narration: NarrationEvent): void {
  const item = document.createElement("li");
  item.textContent = `Scene ${narration.sceneIndex + 1} narrated `
    + `(${narration.durationSeconds.toFixed(1)} s) `;
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.src = narration.audioUrl;
  item.append(audio);
  $("#narrations").append(item);
}

function showFilm(film: FilmResult): void {
  const video = $<HTMLVideoElement>("#film");
  const track = document.createElement("track");
  track.kind = "subtitles";
  track.label = "Narration";
  track.src = film.subtitlesUrl;
  track.default = true;
  video.replaceChildren(track);
  video.poster = film.posterUrl;
  video.src = film.videoUrl;
  video.hidden = false;
  // Browsers autoplay a muted video only while it is on screen.
  video.scrollIntoView({ block: "center" });
}

button("#make-film", async () => {
  for (const list of ["#film-steps", "#narrations"]) $(list).replaceChildren();
  say("#film-script", "");
  const status = $("#film-job");
  delete status.dataset.final;
  const job = await client.films.generate(spaceId);
  status.textContent = job.status;
  const done = await client.jobs.events(job.id, {
    onEvent: (event) => {
      if (event.type === "progress") showStep(event.data as JobProgress);
      if (event.type === "script") {
        const script = event.data as VideoScript;
        say("#film-script", `Script “${script.title}”: `
          + script.scenes.map((scene) => scene.narrationText).join(" / "));
      }
      if (event.type === "narration") showNarration(event.data as NarrationEvent);
    },
  });
  const outcome = done?.data;
  const film = outcome?.status === "succeeded" ? outcome.result as FilmResult : undefined;
  status.textContent = film ? `succeeded: ${film.durationSeconds} s, ${film.width}×${film.height}`
    : `${outcome?.status ?? "over"}: ${outcome?.error?.message ?? ""}`;
  if (film) showFilm(film);
  status.dataset.final = outcome?.status ?? "";
});
