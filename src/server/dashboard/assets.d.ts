// The dashboard's stylesheet and script are imported `with { type: "text" }`: their text, compiled into the binary.
declare module "*/dashboard.css" {
  const text: string;
  export default text;
}
declare module "*/dashboard.js" {
  const text: string;
  export default text;
}
